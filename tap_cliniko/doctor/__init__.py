"""`tap-cliniko-doctor`: what one Cliniko account does, found out read-only before a first sync.

It reports counts, field names, booleans and timings only, never a field value of a record.
"""
