# Lab 8's ipython session (labs/handouts/08-heartbeats.md): a consumer that blocks for 8 s under a 2 s heartbeat and
# so loses its connection (StreamLostError, or another connection error). The scenario of lab 8 runs this file and
# reads the exception's name from the traceback. The "# %%" cell below is a block of the handout, word for word
# (tests/labs/test_handouts.py checks): edit both together.
# Connection settings come from the environment lab 0 sets: RABBITMQ_HOST, RABBITMQ_VHOST, RABBITMQ_USERNAME,
# RABBITMQ_PASSWORD (and RABBITMQ_PORT when the broker is not on 5672).

# %%
# shell 1: a new ipython3, connected as in lab 1 but with heartbeat=2
import os
import time

import pika

credentials = pika.PlainCredentials(os.environ["RABBITMQ_USERNAME"], os.environ["RABBITMQ_PASSWORD"])
params = pika.ConnectionParameters(os.environ["RABBITMQ_HOST"], int(os.environ.get("RABBITMQ_PORT", "5672")),
                                   virtual_host=os.environ["RABBITMQ_VHOST"], credentials=credentials,
                                   heartbeat=2)
connection = pika.BlockingConnection(params)
channel = connection.channel()
channel.queue_declare(queue='heavy', durable=True)
channel.basic_publish(exchange='', routing_key='heavy', body='slow work')
method, properties, body = next(channel.consume('heavy'))
time.sleep(8)                      # blocking "work"
channel.basic_ack(method.delivery_tag)
connection.process_data_events(1)
