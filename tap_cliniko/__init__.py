"""Singer tap for Cliniko patients."""
