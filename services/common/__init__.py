"""The one package every service shares: settings helpers, JSON logging, HTTP
plumbing (error shape, health/ready/metrics), the RabbitMQ topology and the
message contracts, the auth client and the MongoDB connection factory.

It imports no service. It connects to nothing at import time.
"""
