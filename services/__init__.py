"""The lab's services. A compiled build of the ALB simulator's per-request modules (and the
helpers they share) runs when one matches this source (services/native.py); otherwise the source."""

from services import native

native.activate(__path__)
