"""Clearline's domain library: charges, the ledger, merchants and the processor client.

Shipped to Lambda as a layer. Nothing here knows about Lambda or API Gateway event
shapes: handlers translate events into calls on this library.
"""
