"""The AMQP side of the kit: the one source of the scripts' connection code (connection.py), embedded into
sender.py and qprocessor.py by embed.py."""
