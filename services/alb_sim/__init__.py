"""The ALB simulator (its compiled modules come first when services/native.py activated a build)."""

from services import native

native.extend(__path__, "alb_sim")
