"""XML-RPC and JSON-RPC stubs over the corequest HTTP client.

`stub.method(*args)` (dotted names too: `stub.system.listMethods()`)
returns a Task whose `data` is the call's return value; a fault or an
error object turns the result's status_code into 500 so fetch() raises.
"""
import json
import xmlrpc.client


def _xml_parse(result):
    if result.status_code != 200:
        return
    try:
        value = xmlrpc.client.loads(result.content, use_builtin_types=True)[0]
    except xmlrpc.client.Fault as fault:
        result.status_code, result.reason = 500, "XML-RPC Fault"
        result.data = {"faultCode": fault.faultCode, "faultString": fault.faultString}
        return
    result.data = value[0] if len(value) == 1 else value


def _json_parse(result):
    if result.status_code != 200:
        return
    reply = json.loads(result.content)
    if isinstance(reply, dict) and reply.get("error") is not None:
        result.status_code, result.reason = 500, "JSON-RPC Error"
        result.data = reply["error"]
    else:
        result.data = reply.get("result") if isinstance(reply, dict) else reply


class _Method:
    def __init__(self, stub, name):
        self._stub = stub
        self._name = name

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Method(self._stub, "%s.%s" % (self._name, name))

    def __call__(self, *args, **kwargs):
        return self._stub._call(self._name, args, kwargs)


class RPCStub:
    kind = ""

    def __init__(self, call, url, headers=None, auth=None, mode="lb", use_cache=True, timeout=None):
        # call(method, url, data, headers, **options) → Task: was._request
        self._request = call
        self._url = url
        self._headers = headers
        self._auth = auth
        self._mode = mode
        self._use_cache = use_cache
        self._timeout = timeout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)


class XMLRPCStub(RPCStub):
    def _call(self, method, args, kwargs):
        if kwargs:
            raise TypeError("XML-RPC takes positional arguments only")
        body = xmlrpc.client.dumps(tuple(args), method, allow_none=True).encode("utf-8")
        headers = [("Content-Type", "text/xml")] + list(self._headers or [])
        return self._request("POST", self._url, body, headers, auth=self._auth, mode=self._mode,
                             use_cache=self._use_cache, timeout=self._timeout, parse=_xml_parse,
                             accept="text/xml")


class JSONRPCStub(RPCStub):
    def _call(self, method, args, kwargs):
        if args and kwargs:
            raise TypeError("JSON-RPC takes positional or keyword arguments, not both")
        payload = {"jsonrpc": "2.0", "method": method, "params": kwargs or list(args),
                   # a fixed id: one call per HTTP exchange, and equal calls
                   # keep equal bodies so their results can be cached
                   "id": 1}
        body = json.dumps(payload).encode("utf-8")
        headers = [("Content-Type", "application/json")] + list(self._headers or [])
        return self._request("POST", self._url, body, headers, auth=self._auth, mode=self._mode,
                             use_cache=self._use_cache, timeout=self._timeout, parse=_json_parse)
