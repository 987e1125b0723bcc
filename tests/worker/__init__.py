"""What runs inside Celery: task events, progress, confirmations, the emitter,
prefork and other pools, brokers, error detail."""
