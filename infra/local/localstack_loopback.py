"""Runs LocalStack (`python -m localstack.runtime.main`) with its gateway bound to loopback.

LocalStack 4.13's default (twisted) gateway ignores the host part of GATEWAY_LISTEN for
IPv4 and listens on 0.0.0.0 (`TCP4ServerEndpoint(reactor, port)`, marked "TODO: interface
= host?" in localstack/runtime/server/twisted.py). Here an IPv4 endpoint created without an
interface gets the GATEWAY_LISTEN host (127.0.0.1 from up.sh) instead; nothing else changes.
up.sh checks afterwards that nothing listens on a wildcard address.

Also: LocalStack looks up `s3.<LOCALSTACK_HOST>` (here `s3.127.0.0.1`) with the system
resolver the first time it builds an internal S3 client (localstack/utils/aws/aws_stack.py
get_s3_hostname), i.e. a DNS query leaves the machine. Its cached answer is preset to "does
not resolve", so internal clients use `localhost`, which is what that answer means anyway.
"""
import os
import runpy

from twisted.internet import endpoints

_host = os.environ.get("GATEWAY_LISTEN", "127.0.0.1:4566").split(",")[0].rsplit(":", 1)[0] or "127.0.0.1"


class _LoopbackTCP4ServerEndpoint(endpoints.TCP4ServerEndpoint):
    def __init__(self, reactor, port, backlog=50, interface=""):
        super().__init__(reactor, port, backlog, interface or _host)


endpoints.TCP4ServerEndpoint = _LoopbackTCP4ServerEndpoint

from localstack.utils.aws import aws_stack  # noqa: E402  (reads the env set by up.sh)

aws_stack.CACHE_S3_HOSTNAME_DNS_STATUS = False

if __name__ == "__main__":
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
