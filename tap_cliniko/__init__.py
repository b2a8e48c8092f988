"""Singer tap for Cliniko patients."""

from tap_cliniko._sdk import defer_package_init

__version__ = "0.1.0"

# Before anything imports the SDK: it loads only the modules the tap uses (see _sdk.py).
defer_package_init()
