"""Password hashes are Argon2id with the parameters we chose, whatever the library defaults."""

from __future__ import annotations

from argon2 import PasswordHasher, Type, extract_parameters

from gpucenter.auth.credentials import hash_password, verify_password


def test_new_hashes_use_the_pinned_argon2id_parameters() -> None:
    stored = hash_password("correct horse battery staple")
    # Written out here rather than read from the module: the test states the policy.
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    params = extract_parameters(stored)
    assert params.type is Type.ID
    assert (params.time_cost, params.memory_cost, params.parallelism) == (3, 65536, 4)
    assert (params.salt_len, params.hash_len) == (16, 32)


def test_hashes_are_salted_and_verify_only_the_right_password() -> None:
    a, b = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert a != b, "each hash has its own salt"
    assert verify_password(a, "s3cret-pass") and verify_password(b, "s3cret-pass")
    assert not verify_password(a, "s3cret-pasS")
    assert not verify_password(None, "s3cret-pass")
    assert not verify_password("not a hash", "s3cret-pass")


def test_hashes_stored_under_other_parameters_still_verify() -> None:
    """Changing the pinned parameters later must not lock out existing accounts."""
    old = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("old-password")
    assert verify_password(old, "old-password")
    assert not verify_password(old, "other-password")
