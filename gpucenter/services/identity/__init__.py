"""Identity use cases: accounts, sign-in, tokens, MFA, single sign-on, audit."""
