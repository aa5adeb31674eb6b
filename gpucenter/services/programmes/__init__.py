"""Programme use cases: calls, applications, reviews, awards."""
