"""Framework integrations: kbridge.contrib.django and kbridge.contrib.flask.

Each is imported only by projects that use that framework, so kbridge itself
never depends on Django or Flask.
"""
