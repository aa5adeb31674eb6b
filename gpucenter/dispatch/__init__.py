"""The only code that talks to clusters: one Dispatcher protocol, several implementations."""
