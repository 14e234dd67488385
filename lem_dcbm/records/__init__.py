"""Signed records after the meter: their checks, their contract and the operator's tools."""
