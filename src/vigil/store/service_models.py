"""Models of the service: tokens, review queue, decisions, actions, audit log, jobs.

(Filled in by the service work; see issue 3.)
"""

from __future__ import annotations
