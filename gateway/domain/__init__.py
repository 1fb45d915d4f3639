"""Plain-Python rules of the domain: no Flask, no SQLAlchemy."""
