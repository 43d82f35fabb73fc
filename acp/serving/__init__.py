"""How requests are served: the measured optimisations over stock Django, all here, behind one setting.

`ACP_SERVING=optimised` (the default) serves with:

- `handler.py`: the ASGI application, with each request's thread borrowed from a small pool
  (`request_threads.py`) and Django's stock middleware swapped for versions whose hooks run in the event loop
  (`middleware.py`), and the garbage collector tuned for processes holding thousands of waiters;
- `rawsql.py`: fixed SQL for the statements on every request's path (the token lookup, the prepare's binding
  lock, supersede and insert, a control command's create and ack), built from the models.

`ACP_SERVING=stock` serves with Django's own ASGIHandler, middleware and ORM, and CPython's collector defaults:
the fallback if an upgrade of Django or asgiref breaks what these modules rely on. Behaviour is the same in both
modes (CI runs the API and long-poll tests in each); only the cost per request differs (README, "Serving modes").
"""

from django.conf import settings

OPTIMISED = "optimised"
STOCK = "stock"
MODES = (OPTIMISED, STOCK)


def optimised() -> bool:
    return settings.ACP_SERVING == OPTIMISED
