#!/usr/bin/env python3
"""Start skitaid in the foreground for scripts/bench (SIGTERM stops it).

    serve_skitaid.py --port 18080 --threads 4 --app hello:app
    serve_skitaid.py --port 18080 --threads 4 --app /path/to/hello.py:app
    serve_skitaid.py --port 18080 --threads 4 --static /some/dir
    serve_skitaid.py --port 18443 --threads 4 --app hello:app --certfile c.pem --keyfile k.pem
    serve_skitaid.py --port 18443 --threads 4 --app hello:app --certfile c.pem --keyfile k.pem --quic 18443
    serve_skitaid.py --port 18080 --threads 1 --proxy 127.0.0.1:8081
    serve_skitaid.py --port 18080 --threads 1 --proxy 127.0.0.1:8081 --cachefs /tmp/cache
    serve_skitaid.py --port 18080 --threads 1 --proxy 127.0.0.1:8081 \
        --gateway-secret SECRET --role bench      # a role= mount checking HS256 tokens

The request log is off so the comparison is fair with gunicorn and nginx,
whose access logs are off in the benchmark too.
"""
import argparse
import importlib
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load_app(spec):
    """'module:callable' or '/path/file.py:callable' → the callable."""
    if ":" in spec:
        mod_name, _, attr = spec.rpartition(":")
    else:
        mod_name, attr = spec, "app"
    if mod_name.endswith(".py") or os.sep in mod_name:
        path = os.path.abspath(mod_name)
        name = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))
        mspec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        mspec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(mod_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--certfile", help="serve TLS (h2 and http/1.1 by ALPN)")
    p.add_argument("--keyfile")
    p.add_argument("--quic", type=int, default=0, help="also HTTP/3 on this UDP port")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--app", help="module:callable or /path/file.py:callable")
    what.add_argument("--static", metavar="DIR", help="directory to serve")
    what.add_argument("--proxy", metavar="HOST:PORT", help="reverse proxy to this backend")
    p.add_argument("--cachefs", metavar="DIR", help="the HTTP cache in DIR (16M memory, 64M disk)")
    p.add_argument("--gateway-secret", help="with --proxy: check HS256 bearer tokens")
    p.add_argument("--role", help="with --gateway-secret: the role the token must carry")
    args = p.parse_args(argv)
    if args.gateway_secret and not (args.proxy and args.role):
        p.error("--gateway-secret goes with --proxy and --role")

    # The skitaid checkout this script lives in wins over any installed copy.
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import skitaid

    if args.proxy:
        if args.gateway_secret:
            skitaid.enable_gateway(True, args.gateway_secret)
        skitaid.alias("@backend", "http", [args.proxy], role=args.role or "")
        target = "@backend"
    elif args.app:
        target = load_app(args.app)
    else:
        target = os.path.abspath(args.static)
        if not os.path.isdir(target):
            p.error("--static %s: not a directory" % target)

    skitaid.mount("/", target)
    if args.cachefs:
        skitaid.enable_cachefs("16M", "64M", os.path.abspath(args.cachefs))
    if args.certfile:
        skitaid.enable_ssl(os.path.abspath(args.certfile),
                           os.path.abspath(args.keyfile) if args.keyfile else None)
    # the options above are this script's own, parsed already: skitaid.run()
    # would refuse them as undeclared, so its command line is left empty
    del sys.argv[1:]
    skitaid.run(address=args.address, port=args.port, threads=args.threads,
                request_log=False, **({"quic": args.quic} if args.quic else {}))


if __name__ == "__main__":
    main()
