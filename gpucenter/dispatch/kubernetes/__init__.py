"""The Kubernetes site kind: batch/v1 Jobs (Kueue-admitted gangs) in a namespace per project."""
