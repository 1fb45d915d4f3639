"""Database: models, engine set-up, migrations."""
