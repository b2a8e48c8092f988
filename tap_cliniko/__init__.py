"""Singer tap for Cliniko patients."""

__version__ = "0.1.0"
