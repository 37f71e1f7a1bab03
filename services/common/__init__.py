"""The one package every service shares: settings helpers, JSON logging, HTTP
plumbing (error shape, health/ready/metrics), the RabbitMQ topology and the
message contracts, the auth client, the MongoDB connection factory and the
Redis client factory (``redisconn``: one server or the primary behind Sentinel).

It imports no service. It connects to nothing at import time.
"""
