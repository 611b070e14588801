#!/usr/bin/python3
"""A tiny RTSP test server (GStreamer): serves an H.264 mp4 at rtsp://127.0.0.1:PORT/cam.

Run it with the SYSTEM Python (it needs ``gi`` and GstRtspServer from Debian, not the venv):

    /usr/bin/python3 scripts/rtsp_server.py --port 8554 --file clip.mp4   # the file, per client
    /usr/bin/python3 scripts/rtsp_server.py --port 8554 --loop            # endless live test pattern

Debian packages: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good
gstreamer1.0-plugins-bad (openh264enc for --loop). Prints "ready" once listening; stop it with
SIGTERM/SIGINT (tests start it in its own process group and use os.killpg).
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

MOUNT = "/cam"


def file_pipeline(path: str) -> str:
    # config-interval: resend SPS/PPS so a client joining (or re-joining) can decode at once.
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{location}" ! qtdemux ! h264parse config-interval=-1 '
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def live_pipeline(width: int, height: int, fps: int) -> str:
    return (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! videoconvert ! openh264enc gop-size={fps} ! h264parse config-interval=-1 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="H.264 mp4 to serve (each client gets it from the start)")
    source.add_argument("--loop", action="store_true", help="serve an endless live test pattern instead")
    parser.add_argument("--size", default="320x240", help="test pattern size for --loop (WxH)")
    parser.add_argument("--fps", type=int, default=30, help="test pattern frame rate for --loop")
    args = parser.parse_args(argv)

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if args.loop:
        width, height = (int(v) for v in args.size.lower().split("x"))
        factory.set_launch(live_pipeline(width, height, args.fps))
        factory.set_shared(True)
    else:
        factory.set_launch(file_pipeline(args.file))
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    try:
        loop.run()
    finally:
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
