"""The local site kind: jobs as process groups on this machine."""
