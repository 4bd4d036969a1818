"""analyzer.predict: the predict command over any model the API loads; folders, archives and
hostile files listed and read as the records job does."""
import os
import zipfile

import pytest

from analyzer import predict


def _face(photo_tools, seed):
    return photo_tools.encode(photo_tools.plain(96, 96, seed=seed), "JPEG")


def test_crops_in_a_folder_one_line_each_and_skips_named(model_base, photo_tools, tmp_path,
                                                        capsys):
    folder = tmp_path / "faces"
    (folder / "deeper").mkdir(parents=True)
    (folder / "34_1_0_20170101000000001.jpg").write_bytes(_face(photo_tools, 1))
    (folder / "deeper" / "unlabelled.png").write_bytes(
        photo_tools.encode(photo_tools.plain(80, 80, seed=2), "PNG"))
    (folder / "notes.txt").write_bytes(b"not an image")
    os.symlink(folder / "34_1_0_20170101000000001.jpg", folder / "link.jpg")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("20_0_1_20170101000000002.jpg", _face(photo_tools, 3))

    status = predict.main([f"--model={model_base}", str(folder), str(archive)])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert status == 1  # two inputs could not be answered; the others were
    assert len(lines) == 3
    assert any(line.startswith("34_1_0_20170101000000001.jpg: Predicted age:")
               and "true age: 34" in line for line in lines)
    assert any("unlabelled.png: Predicted age:" in line for line in lines)
    assert any(line.startswith("20_0_1_20170101000000002.jpg: Predicted age:") for line in lines)
    assert "notes.txt: undecodable" in err
    assert "link.jpg: not_a_regular_file" in err
    # a link named on the command line is read, as the demo's slice of ../shared is
    assert predict.main([f"--model={model_base}", str(folder / "link.jpg")]) == 0
    assert capsys.readouterr().out.startswith("link.jpg: Predicted age:")


def test_photos_through_the_job_dir_print_every_face(job_dir, photo, tmp_path, capsys):
    path = tmp_path / "group.png"
    path.write_bytes(photo)
    assert predict.main([f"--model={job_dir}", "--photos", str(path)]) == 0
    faces = [line for line in capsys.readouterr().out.splitlines() if " face " in line]
    assert len(faces) == 3
    assert all(line.startswith("group.png face ") and "Predicted age:" in line for line in faces)


@pytest.mark.parametrize("argv, message", [
    ([], "give --model"),
    (["--model=m", "--server=localhost:1"], "not both"),
    (["--model=/nonexistent/model"], "/nonexistent/model"),
    (["--model=m", "--max_image_pixels=0"], "expected a pixel count > 0"),
    (["--model=m", "--draw_dir=d"], "--draw_dir needs --photos"),
])
def test_usage_errors_name_the_problem(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        predict.main([*argv, str(tmp_path / "x.jpg")])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
