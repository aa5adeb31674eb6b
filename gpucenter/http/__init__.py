"""What api/ and web/ share: auth dependencies, permissions, errors, CSRF, headers."""
