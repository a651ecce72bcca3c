"""Runnable examples of sagabox, from the articles the project grew from (see README.md here).

Each example is a small system of endpoints (`sagabox.App`) with business tables of their own,
and a `scenario` that `sagabox demo NAME` plays with simulated time.
"""
