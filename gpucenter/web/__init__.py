"""Server-rendered pages: sign-in and the site overview."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
