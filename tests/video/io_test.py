"""video.io: clips and image sequences in (with the limits), frames out."""
import os
import threading

import numpy as np
import pytest
from PIL import Image

from video import io as vio


@pytest.mark.parametrize("ext", ["mp4", "mov", "mkv", "webm", "avi"])
def test_every_container_reads_every_frame_in_order(tmp_path, clips, ext):
    path = clips.write(tmp_path / f"clip.{ext}", clips.marked(12), rate=10)
    with vio.open_source(path) as source:
        frames = list(source)
        assert source.info.kind == "video" and source.info.fps == 10.0
        assert (source.info.width, source.info.height) == (64, 48)
    assert [f.index for f in frames] == list(range(12))
    assert np.allclose([f.time for f in frames], np.arange(12) / 10, atol=1e-3)
    greys = [int(np.median(f.image[8:40, 24:56])) for f in frames]
    assert all(abs(g - 10 * i) <= 4 for i, g in enumerate(greys))  # lossy codecs


def test_fps_samples_at_the_rate_asked(tmp_path, clips):
    path = clips.write(tmp_path / "clip.mp4", clips.marked(30), rate=30)
    with vio.open_source(path, fps=10) as source:
        frames = list(source)
    assert len(frames) == 10
    assert np.allclose(np.diff([f.time for f in frames]), 0.1, atol=1e-3)


def test_rotation_metadata_is_applied(tmp_path, clips):
    path = clips.write(tmp_path / "portrait.mp4", clips.marked(3), rotation=90)
    with vio.open_source(path) as source:
        frame = next(iter(source))
        assert source.info.rotation == 90
        assert (source.info.width, source.info.height) == (48, 64)
    assert frame.image.shape == (64, 48, 3)
    # The white left quarter, turned 90 degrees counter-clockwise, is the bottom rows.
    assert frame.image[-8:, :, 0].mean() > 200 and frame.image[:40, :, 0].mean() < 60


def test_image_sequence_directory_skips_bad_images(tmp_path, png_bomb, hostile_files):
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"f{i}.png")
    (tmp_path / "f1b.jpg").write_bytes(b"not an image at all")
    (tmp_path / "f1c.png").write_bytes(png_bomb)
    (tmp_path / "f1d.jpg").write_bytes(hostile_files.jpeg_scan_bomb(64, 200))
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    with vio.open_source(str(tmp_path), max_pixels=10_000, sequence_fps=5) as source:
        frames = list(source)
        skipped = dict((os.path.basename(p), r) for p, r in source.skipped)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 40, 80]
    assert [f.time for f in frames] == [0.0, 0.2, 1.0]  # their place in the sorted names
    assert skipped == {"f1b.jpg": "undecodable", "f1c.png": "image_too_large",
                       "f1d.jpg": "image_too_costly"}


def test_image_sequence_glob_and_exif_orientation(tmp_path):
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    image.save(tmp_path / "a.jpg", exif=exif)
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "b.jpg")
    with vio.open_source(str(tmp_path / "*.jpg")) as source:
        shapes = [f.image.shape for f in source]
    assert shapes == [(20, 10, 3), (10, 20, 3)]


def test_not_a_video_is_a_clear_error(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_text("hello, this is text")
    with pytest.raises(vio.VideoError) as error:
        vio.open_source(str(path))
    assert error.value.reason == vio.NOT_A_VIDEO and "clip.mp4" in str(error.value)


def test_an_image_is_not_a_video(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(path)
    with pytest.raises(vio.VideoError) as error:
        vio.open_source(str(path))
    assert error.value.reason == vio.NOT_A_VIDEO


def test_playlist_cannot_reach_the_network_or_other_files(tmp_path, clips):
    clips.write(tmp_path / "real.mp4", clips.marked(3))
    playlist = tmp_path / "list.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n"
                        "http://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "list.ffconcat"
    concat.write_text(f"ffconcat version 1.0\nfile '{tmp_path / 'real.mp4'}'\n")
    for path in (playlist, concat):
        with pytest.raises(vio.VideoError) as error:
            vio.open_source(str(path))
        assert error.value.reason == vio.NOT_A_VIDEO


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    result = {}

    def run():
        try:
            vio.open_source(str(fifo))
        except vio.VideoError as error:
            result["reason"] = error.reason
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert result.get("reason") == vio.NOT_A_VIDEO


def test_missing_file(tmp_path):
    with pytest.raises(vio.VideoError) as error:
        vio.open_source(str(tmp_path / "absent.mp4"))
    assert error.value.reason == vio.NOT_FOUND


def test_clip_without_frames(tmp_path):
    import av

    path = tmp_path / "empty.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(vio.VideoError) as error:
        list(vio.open_source(str(path)))
    assert error.value.reason in (vio.NO_FRAMES, vio.NOT_A_VIDEO)


@pytest.mark.parametrize("ext", ["avi", "webm"])
def test_truncated_clip_keeps_the_frames_before_the_cut(tmp_path, clips, ext):
    path = clips.write(tmp_path / f"clip.{ext}", clips.noise(40), gop=5)
    data = open(path, "rb").read()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    with vio.open_source(str(cut)) as source:
        frames = list(source)
    assert 5 <= len(frames) < 40
    if ext == "avi":  # the AVI header declares 40 frames
        assert source.truncated


def test_clip_cut_inside_its_first_frame(tmp_path, clips):
    path = clips.write(tmp_path / "clip.mkv", clips.noise(40), gop=5)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(open(path, "rb").read()[:1200])
    with pytest.raises(vio.VideoError) as error:
        list(vio.open_source(str(cut)))
    assert error.value.reason in (vio.TRUNCATED, vio.NO_FRAMES, vio.NOT_A_VIDEO)


def test_max_frames_declared_is_refused_before_decoding(tmp_path, clips):
    path = clips.write(tmp_path / "clip.mp4", clips.marked(20))
    with pytest.raises(vio.VideoError) as error:
        vio.open_source(path, max_frames=5)
    assert error.value.reason == vio.TOO_MANY_FRAMES
    # Sampled at a lower rate, the same clip fits.
    assert len(list(vio.open_source(path, fps=2, max_frames=5))) == 4


def test_max_frames_undeclared_stops_at_the_limit(tmp_path, clips):
    path = clips.write(tmp_path / "clip.webm", clips.marked(20))  # WebM declares no count
    source = vio.open_source(path, max_frames=5)
    with pytest.raises(vio.VideoError) as error:
        list(source)
    assert error.value.reason == vio.TOO_MANY_FRAMES and source.frames_read == 5


def test_frames_over_the_pixel_limit_are_refused_from_the_header(tmp_path, clips):
    path = clips.write(tmp_path / "clip.mp4", clips.marked(2))
    with pytest.raises(vio.VideoError) as error:
        vio.open_source(path, max_pixels=64 * 48 - 1)
    assert error.value.reason == vio.FRAME_TOO_LARGE and "--max_image_pixels" in str(error.value)


def test_bad_arguments():
    with pytest.raises(ValueError):
        vio.open_source("x.mp4", fps=0)
    with pytest.raises(ValueError):
        vio.open_source("x.mp4", max_pixels=0)


@pytest.mark.parametrize("ext", ["mp4", "webm", "avi", "mov", "mkv"])
def test_sink_writes_a_clip_the_source_reads_back(tmp_path, ext):
    path = str(tmp_path / f"out.{ext}")
    frames = [np.full((31, 41, 3), 20 * i, np.uint8) for i in range(8)]
    with vio.open_sink(path, 41, 31, fps=8) as sink:
        for image in frames:
            sink.write(image)
    with vio.open_source(path) as source:
        back = list(source)
        assert source.info.fps == 8.0
        # Odd sides are padded by one row/column for 4:2:0.
        assert (source.info.width, source.info.height) == (42, 32)
    assert len(back) == 8
    levels = [int(f.image[10:20, 10:30].mean()) for f in back]
    assert all(abs(a - 20 * i) <= 6 for i, a in enumerate(levels))


def test_sink_to_a_directory_writes_png_frames(tmp_path):
    out = tmp_path / "frames"
    with vio.open_sink(str(out), 20, 10, fps=5) as sink:
        sink.write(np.zeros((10, 20, 3), np.uint8))
        sink.write(np.zeros((40, 80, 3), np.uint8))  # another size: resized
    names = sorted(os.listdir(out))
    assert names == ["frame_000000.png", "frame_000001.png"]
    assert Image.open(out / names[1]).size == (20, 10)


def test_sink_refuses_an_image_name(tmp_path):
    with pytest.raises(ValueError, match="extension"):
        vio.open_sink(str(tmp_path / "out.jpg"), 20, 10, fps=5)
