"""agegender.arg_types: old flag spellings are named once on stderr, new ones never."""
import io

from agegender import arg_types

RENAMED = {"--export_base": "--output_dir", "--split": "--split_fractions"}


def test_old_spelling_warns_once_and_names_the_new_one():
    out = io.StringIO()
    seen = arg_types.warn_renamed(["--export_base=a", "--split", "0.8,0.1,0.1",
                                   "--export_base=b"], RENAMED, out)
    assert seen == ["--export_base", "--split"]
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "--export_base is deprecated, use --output_dir" in lines[0]


def test_new_spellings_and_prefixes_do_not_warn():
    out = io.StringIO()
    assert arg_types.warn_renamed(["--output_dir=a", "--split_fractions=1,0,0"], RENAMED, out) == []
    assert out.getvalue() == ""


def test_max_image_pixels_means_one_thing_everywhere(capsys):
    import argparse

    import pytest

    parser = argparse.ArgumentParser()
    arg_types.add_max_image_pixels(parser, 50_000_000)
    assert parser.parse_args([]).max_image_pixels == 50_000_000
    assert parser.parse_args(["--max_image_pixels=12"]).max_image_pixels == 12
    for bad in ("0", "-5", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args([f"--max_image_pixels={bad}"])
        assert "expected a pixel count > 0" in capsys.readouterr().err
