"""What keeps the kit from getting a broker: its own module, so that every way of starting one can raise it without
importing the others (the container and the local node are started from labs.brokers.broker)."""


class BrokerUnavailable(RuntimeError):
    """Neither AMQP_URL nor a way to start the asked-for broker (rabbitmq-server installed, a Docker engine)."""
