"""python -m examples.processor --aggregator URL --pool P --key K [--webhook-port N] [--once]"""

from __future__ import annotations

import argparse
import logging

from .runner import Processor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.processor", description=__doc__)
    parser.add_argument("--aggregator", required=True, help="pool_aggregator base URL")
    parser.add_argument("--pool", required=True, help="pool id")
    parser.add_argument("--key", required=True, help="the pool's processor API key (X-API-Key)")
    parser.add_argument("--webhook-port", type=int, default=None,
                        help="also listen for announcements (the pool's processor_url) on this port")
    parser.add_argument("--webhook-host", default="127.0.0.1")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--once", action="store_true", help="process the groups ready now, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    processor = Processor(args.aggregator, args.pool, args.key, poll_seconds=args.poll_seconds)
    if args.once:
        done = processor.poll_once()
        print(f"processed {len(done)} group(s): {', '.join(done) or '-'}")
        return 0
    if args.webhook_port is not None:
        port = processor.start_webhook(args.webhook_port, args.webhook_host)
        logging.info("webhook listening on %s:%d", args.webhook_host, port)
    try:
        processor.run()
    except KeyboardInterrupt:
        pass
    finally:
        processor.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
