# Lab 9's ipython session (labs/handouts/09-poison-messages.md): connected as in lab 1, look at the dead letter on
# homework-dead and leave it there. The scenario of lab 9 runs this file and reads what it prints. Each "# %%" cell below
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
method, properties, body = channel.basic_get('homework-dead')
death = properties.headers['x-death'][0]
print(body, death['queue'], death['reason'])       # b'poison' homework delivery_limit
channel.basic_nack(method.delivery_tag)             # leave it on homework-dead for now
