"""Tests of the scripts as files a student uploads: alone, on the oldest Python and pika, in ipython, beside the tutorial's code."""
