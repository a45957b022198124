# Lab 1's second ipython session (labs/handouts/01-hello-world.md): connect, then consume 'hello' until Ctrl-C. The
# scenario of lab 1 runs this file and presses Ctrl-C once it has printed the three messages. Each "# %%" cell below
# is a block of a handout, word for word (tests/labs/test_handouts.py checks): edit both together.
# Connection settings come from the environment lab 0 sets: RABBITMQ_HOST, RABBITMQ_VHOST, RABBITMQ_USERNAME,
# RABBITMQ_PASSWORD (and RABBITMQ_PORT when the broker is not on 5672).

# %%
# ipython3: connect with the settings of lab 0
import os

import pika

credentials = pika.PlainCredentials(os.environ["RABBITMQ_USERNAME"], os.environ["RABBITMQ_PASSWORD"])
params = pika.ConnectionParameters(os.environ["RABBITMQ_HOST"], int(os.environ.get("RABBITMQ_PORT", "5672")),
                                   virtual_host=os.environ["RABBITMQ_VHOST"], credentials=credentials,
                                   heartbeat=600)
connection = pika.BlockingConnection(params)
channel = connection.channel()

# %%
# shell 2: ipython3, after the same connection lines
channel.queue_declare(queue='hello', durable=True)

def callback(ch, method, properties, body):
    print(f"received {body!r}")

channel.basic_consume(queue='hello', auto_ack=True, on_message_callback=callback)
channel.start_consuming()
