"""The HTTP front door: an order API and a live order page (``pizzeria api``).

``app.create_app`` builds the FastAPI app; ``orders`` and ``public`` hold the routes,
``auth`` the order tokens and the staff key, ``problems`` the RFC 9457 error answers,
``events`` the server-sent events, ``views`` how an order is read, ``serve`` uvicorn.
Nothing outside this package imports it except the ``api`` and ``demo`` commands, and
those only when they run: the worker and the other commands never load FastAPI.
"""

#: Where `pizzeria api` and the demo serve the page (the demo takes a free port if taken).
DEFAULT_PORT = 8000
