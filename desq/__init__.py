"""desq: archive billions of small files into large containers and serve any one by name."""

__version__ = "0.1.0"
