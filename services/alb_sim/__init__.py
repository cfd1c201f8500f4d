"""The ALB simulator. A compiled build of its per-request modules runs when one matches this
source (services/native.py); otherwise the source itself."""

from services import native

native.activate(__path__)
