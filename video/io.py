"""Reading and writing video: clips and image sequences in, an annotated copy out (PyAV).

Owns what a "video" is for the rest of `video/`: a `VideoSource` yields `Frame`s (index in
the source, time in seconds, upright uint8 RGB pixels [H, W, 3]) and a `VideoSink` writes
frames out. PyAV is the library: its wheels carry FFmpeg (H.264, VP8/VP9, MPEG-4, MJPEG
encoders included), so nothing is needed from the system and nothing is downloaded.

Inputs (`open_source`):
- a video file in one of `CONTAINERS` (mp4/mov/m4v/3gp, mkv/webm, avi); only local regular
  files, opened with FFmpeg's protocol whitelist set to `file` (a playlist inside a file
  cannot reach the network or other files) and the container format checked after probing;
- an image sequence: a directory (its image files in name order) or a glob; each image's
  header goes through `agegender.image_header` (the project's pixel limit) before PIL
  decodes it, EXIF orientation applied; an unreadable image is skipped with its reason
  (`VideoSource.skipped`), the sequence goes on.

Frames are upright: a clip's display matrix (a phone's portrait clip) is applied with
numpy rotations. `fps` samples the clip at that rate (a frame is kept when its timestamp
reaches the next sampling time); None keeps every frame.

Limits (never a hang, never an unbounded allocation): `max_pixels` (a frame's width x
height, read from the stream's header before any frame is decoded, and checked again per
frame); `max_frames` (frames yielded: a clip declaring more is refused before decoding, one
that lies is stopped when it reaches it); a file that is not a video, a truncated file whose
first frame cannot be read, and a clip without frames raise `VideoError` with a `reason`. A
clip truncated after its first frames ends there (`VideoSource.truncated` is set).

Output (`open_sink`): the codec family follows the output's extension: H.264 in
.mp4/.mov/.mkv/.m4v, VP8 in .webm, MPEG-4 part 2 in .avi; a path without a video extension
is a directory of PNG frames. Audio is not copied.
"""
import dataclasses
import fractions
import glob
import io
import os
import stat

import numpy as np

from agegender import image_header
from agegender.errors import ImageError, ReasonError
from analyzer import inputs

# FFmpeg demuxer names (as `container.format.name` lists them) accepted as video input.
CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "matroska,webm": "matroska",
    "avi": "avi",
}
VIDEO_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".3gp": "mp4",
                    ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Encoder per output extension: (codec, pixel format, options). The fastest x264 preset
# without lookahead: annotation runs beside the model on the same cores, and on 640x480
# frames "ultrafast"+"zerolatency" took 12 ms a frame where "veryfast" took 60-160 ms
# (docs/video.md); the price is a ~1.7x larger file.
_H264 = ("libx264", "yuv420p", {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"})
_ENCODERS = {
    ".mp4": _H264, ".m4v": _H264, ".mov": _H264, ".mkv": _H264,
    ".webm": ("libvpx", "yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "10",
                                    "b": "2M"}),
    ".avi": ("mpeg4", "yuv420p", {"qscale": "3"}),
}
DEFAULT_MAX_FRAMES = 100_000  # an hour at 25-30 frames/s sampled is ~100k frames
DEFAULT_SEQUENCE_FPS = 25.0   # the timing of an image sequence (it carries none)

NOT_A_VIDEO, TRUNCATED, NO_FRAMES = "not_a_video", "truncated", "no_frames"
TOO_MANY_FRAMES, FRAME_TOO_LARGE, NOT_FOUND = "too_many_frames", "frame_too_large", "not_found"


class VideoError(ReasonError, ValueError):
    """A clip or sequence that cannot be read as asked; `reason` is one of the names above."""


@dataclasses.dataclass(frozen=True)
class Frame:
    index: int          # position in the source (before sampling)
    time: float         # seconds from the start
    image: np.ndarray   # uint8 [H, W, 3] RGB, upright


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    kind: str                 # "video" or "images"
    width: int                # upright, of the first frame
    height: int
    fps: float                # the source's frame rate (sequence: the rate given)
    frames: int | None        # frames declared by the container (None: unknown)
    container: str | None     # FFmpeg demuxer ("mov,mp4,...") or None for images
    codec: str | None
    rotation: int             # degrees counter-clockwise applied to make frames upright
    has_audio: bool


def _is_glob(spec):
    return any(c in spec for c in "*?[")


def open_source(spec, *, fps=None, max_frames=DEFAULT_MAX_FRAMES,
                max_pixels=image_header.DEFAULT_MAX_PIXELS, sequence_fps=DEFAULT_SEQUENCE_FPS):
    """A `VideoSource` for a video file, a directory of images or a glob of images."""
    if fps is not None and not fps > 0:
        raise ValueError(f"fps {fps}: must be > 0 (None: every frame)")
    if max_frames < 1 or max_pixels < 1:
        raise ValueError("max_frames and max_pixels must be positive")
    if os.path.isdir(spec) or _is_glob(spec):
        return _ImageSequence(spec, fps, max_frames, max_pixels, sequence_fps)
    return _Clip(spec, fps, max_frames, max_pixels)


class VideoSource:
    """Iterate for `Frame`s (once); `info`, `skipped` [(name, reason)], `truncated`."""

    info: VideoInfo

    def __init__(self, fps, max_frames, max_pixels):
        self._fps, self.max_frames, self.max_pixels = fps, max_frames, max_pixels
        self.skipped = []
        self.truncated = False
        self.frames_read = 0  # frames yielded

    def _sampled(self, frames):
        """Frames kept at `fps`, and the frame and size limits."""
        next_time = None
        step = None if self._fps is None else 1.0 / self._fps
        for frame in frames:
            if step is not None:
                if next_time is not None and frame.time < next_time - 1e-6:
                    continue
                # The next sample is a step after this one's slot (no drift on jittery
                # timestamps; a gap in the clip does not cause a burst after it).
                next_time = frame.time + step if next_time is None else max(
                    next_time + step, frame.time + step / 2)
            if self.frames_read >= self.max_frames:
                raise VideoError(TOO_MANY_FRAMES, f"{self.info.path}: more than "
                                 f"{self.max_frames} frames (--max_frames)")
            self.frames_read += 1
            yield frame

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_pixels(path, width, height, max_pixels):
    if width * height > max_pixels:
        raise VideoError(FRAME_TOO_LARGE, f"{path}: frames of {width}x{height} are over the "
                         f"limit of {max_pixels:,} pixels (--max_image_pixels)")


def _upright(image, rotation):
    """Applies a display rotation (degrees counter-clockwise, multiples of 90)."""
    turns = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class _Clip(VideoSource):
    def __init__(self, path, fps, max_frames, max_pixels):
        import av

        super().__init__(fps, max_frames, max_pixels)
        try:
            mode = os.stat(path).st_mode
        except OSError as error:
            raise VideoError(NOT_FOUND, f"{path}: {error.strerror}") from None
        if not stat.S_ISREG(mode):
            raise VideoError(NOT_A_VIDEO, f"{path}: not a regular file")
        try:
            # Local files only: a playlist or concat script inside the file cannot make
            # FFmpeg open URLs or other files. The timeout bounds any blocking read.
            self._container = av.open(path, "r", options={"protocol_whitelist": "file"},
                                      timeout=30.0)
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise VideoError(NOT_A_VIDEO, f"{path}: not a video FFmpeg can read, or cut "
                             f"before its index ({_short(error)})") from None
        container = self._container
        fmt = container.format.name
        if fmt not in CONTAINERS or not container.streams.video:
            container.close()
            what = "no video stream" if fmt in CONTAINERS else f"container {fmt!r}"
            raise VideoError(NOT_A_VIDEO, f"{path}: {what}; expected one of mp4/mov, "
                             "mkv/webm, avi")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding keeps up with the model
        self._stream = stream
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            _check_pixels(path, width, height, max_pixels)
        except VideoError:
            container.close()
            raise
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        declared = stream.frames or None
        if declared and fps is not None and rate:
            declared_sampled = int(declared * min(1.0, fps / float(rate)))
        else:
            declared_sampled = declared
        if declared_sampled and declared_sampled > max_frames:
            container.close()
            raise VideoError(TOO_MANY_FRAMES, f"{path}: {declared_sampled} frames to read, "
                             f"over --max_frames={max_frames}")
        self.info = VideoInfo(path, "video", width, height, float(rate) if rate else 0.0,
                              declared, fmt, stream.codec_context.name, 0,
                              bool(container.streams.audio))
        self._rotation_known = False

    def _decoded(self):
        import av

        stream = self._stream
        base = stream.start_time or 0
        index = 0
        try:
            for frame in self._container.decode(stream):
                _check_pixels(self.info.path, frame.width, frame.height, self.max_pixels)
                if frame.pts is not None and stream.time_base:
                    time = float((frame.pts - base) * stream.time_base)
                else:
                    time = index / (self.info.fps or DEFAULT_SEQUENCE_FPS)
                rotation = frame.rotation or 0
                if not self._rotation_known:
                    self._rotation_known = True
                    turned = int(round(rotation / 90.0)) % 2
                    self.info = dataclasses.replace(
                        self.info, rotation=int(rotation),
                        width=frame.height if turned else frame.width,
                        height=frame.width if turned else frame.height)
                image = _upright(frame.to_ndarray(format="rgb24"), rotation)
                yield Frame(index, max(0.0, time), image)
                index += 1
        except av.FFmpegError as error:
            if index == 0:
                raise VideoError(TRUNCATED, f"{self.info.path}: no frame could be decoded "
                                 f"({_short(error)})") from None
            self.truncated = True  # the frames read so far stand
        if self.info.frames and 0 < index < self.info.frames:
            self.truncated = True  # fewer frames than the container declares
        if index == 0:
            if self.info.frames or self._container.duration:
                raise VideoError(TRUNCATED, f"{self.info.path}: declares frames but none "
                                 "could be decoded (truncated or corrupt)")
            raise VideoError(NO_FRAMES, f"{self.info.path}: the clip holds no frame")

    def __iter__(self):
        return self._sampled(self._decoded())

    def close(self):
        self._container.close()


class _ImageSequence(VideoSource):
    def __init__(self, spec, fps, max_frames, max_pixels, sequence_fps):
        super().__init__(fps, max_frames, max_pixels)
        if os.path.isdir(spec):
            names = sorted(os.listdir(spec))
            paths = [os.path.join(spec, n) for n in names]
        else:
            paths = sorted(glob.glob(spec))
        # Only regular files with an image extension (no links to devices, no FIFOs).
        self._paths = [p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(p) and not os.path.islink(p)]
        if not self._paths:
            raise VideoError(NO_FRAMES, f"{spec}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        if fps is None and len(self._paths) > max_frames:
            raise VideoError(TOO_MANY_FRAMES, f"{spec}: {len(self._paths)} images, over "
                             f"--max_frames={max_frames}")
        self._rate = float(sequence_fps)
        self.info = VideoInfo(spec, "images", 0, 0, self._rate, len(self._paths), None, None,
                              0, False)

    def _decoded(self):
        from PIL import Image, ImageOps

        for index, path in enumerate(self._paths):
            try:
                with open(path, "rb") as f:
                    data = f.read()
                inputs.check(data, self.max_pixels)  # the photos' limits and skip reasons
                with Image.open(io.BytesIO(data)) as opened:
                    image = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
            except ImageError as error:
                self.skipped.append((path, error.reason))
                continue
            except (OSError, ValueError, SyntaxError):
                self.skipped.append((path, "undecodable"))
                continue
            if not self.info.width:
                self.info = dataclasses.replace(self.info, width=image.shape[1],
                                                height=image.shape[0])
            yield Frame(index, index / self._rate, image)
        if not self.info.width:
            raise VideoError(NO_FRAMES, f"{self.info.path}: none of its {len(self._paths)} "
                             "images could be read")

    def __iter__(self):
        return self._sampled(self._decoded())


def _short(error):
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


# -- output ------------------------------------------------------------------------------

def open_sink(path, width, height, fps):
    """A `VideoSink` writing `width` x `height` frames at `fps` to `path` (see the module
    docstring for the codec); frames of another size are resized to it."""
    ext = check_output_name(path)
    if ext:
        return _ClipSink(path, width, height, fps, *_ENCODERS[ext])
    return _FramesSink(path, width, height)


def check_output_name(path):
    """The output's video extension ("" for a directory of frames); ValueError for a name
    no sink writes."""
    ext = os.path.splitext(path)[1].lower()
    if ext and ext not in _ENCODERS:
        raise ValueError(f"{path}: output extension {ext!r}; one of "
                         f"{', '.join(sorted(_ENCODERS))}, or a directory name without an "
                         "extension for PNG frames")
    return ext


class VideoSink:
    """`write(frame_rgb)` then `close()`; as a context manager it closes itself."""

    def __init__(self, width, height):
        self.width, self.height = int(width), int(height)
        self.frames_written = 0

    def _fit(self, image):
        if image.shape[1] != self.width or image.shape[0] != self.height:
            from PIL import Image
            image = np.asarray(Image.fromarray(image).resize((self.width, self.height),
                                                             Image.BILINEAR))
        return image

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _ClipSink(VideoSink):
    def __init__(self, path, width, height, fps, codec, pix_fmt, options):
        import av

        super().__init__(width, height)
        rate = fractions.Fraction(fps).limit_denominator(1001) if fps else 25
        self._container = av.open(path, "w")
        stream = self._container.add_stream(codec, rate=rate, options=dict(options))
        # 4:2:0 needs even sides: the frame is padded by one edge row/column if odd.
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = pix_fmt
        self._stream = stream

    def write(self, image):
        import av

        image = self._fit(np.asarray(image, np.uint8))
        pad_y, pad_x = self._stream.height - image.shape[0], self._stream.width - image.shape[1]
        if pad_y or pad_x:
            image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self.frames_written
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self):
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None


class _FramesSink(VideoSink):
    def __init__(self, path, width, height):
        super().__init__(width, height)
        os.makedirs(path, exist_ok=True)
        self.path = path

    def write(self, image):
        from PIL import Image

        Image.fromarray(self._fit(np.asarray(image, np.uint8))).save(
            os.path.join(self.path, f"frame_{self.frames_written:06d}.png"))
        self.frames_written += 1

    def close(self):
        pass
