"""Sinks: where events are delivered (``registry``), and their bodies and texts (``render``).

Nothing is imported here, so that polling can render an event body without loading the
e-mail and webhook clients.
"""
