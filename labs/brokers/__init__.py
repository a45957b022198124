"""Getting a broker: a private local node, a container, a three-node cluster, its rabbitmqctl and management API,
and the Redis the Jobs API lab stores its jobs in."""
