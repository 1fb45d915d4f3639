"""Real parts for the tests: servers on 127.0.0.1, our own redis-server, our own PostgreSQL database."""
