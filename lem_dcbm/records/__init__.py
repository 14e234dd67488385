"""Signed records as the operator sees them: content checks, summaries, the late-record
contract and the journal's export.

Everything here is pure (no I/O but what a caller passes in), so the controller, the
console tools and the tests share one reading of an OCMF record.
"""
