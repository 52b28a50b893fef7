"""Preset files as users write them: helper variables, and editors' encodings."""
import pytest

from configurator import resolve_config


def test_a_helper_variable_is_refused_saying_how_to_keep_it_private(tmp_path):
    preset = tmp_path / "small.py"
    preset.write_text("size = 64\nimg_size = size\n")
    with pytest.raises(KeyError, match=r"unknown config name 'size' .*name it '_size': a "
                                       r"leading underscore keeps it private"):
        resolve_config([str(preset)])
    preset.write_text("_size = 64\nimg_size = _size * 2\nn_scales = 1\n")
    assert resolve_config([str(preset)])["img_size"] == 128


def test_a_command_line_typo_gets_no_preset_advice():
    with pytest.raises(KeyError, match="unknown config name 'size'") as error:
        resolve_config(["--size=3"])
    assert "underscore" not in str(error.value)


def test_a_preset_saved_with_a_byte_order_mark_and_windows_line_endings(tmp_path):
    preset = tmp_path / "windows.py"
    preset.write_bytes(b"\xef\xbb\xbfimg_size = 128\r\nn_scales = 1\r\n\r\n\r\n")
    cfg = resolve_config([str(preset)])
    assert cfg["img_size"] == 128 and cfg["n_scales"] == 1
    preset.write_bytes(b"\xef\xbb\xbfimg_size = 128\r\n\r\nn_scales = (1\r\n")
    with pytest.raises(ValueError, match=f"preset '{preset}', line 3: syntax error"):
        resolve_config([str(preset)])


@pytest.mark.parametrize("line, said", [("import sys\nsys.exit(0)\n", "sys.exit(0)"),
                                        ("import sys\nsys.exit(3)\n", "sys.exit(3)"),
                                        ("raise SystemExit\n", "sys.exit(None)"),
                                        ("raise KeyboardInterrupt\n", "KeyboardInterrupt")])
def test_any_exit_from_a_preset_is_an_error_naming_file_and_line(tmp_path, capsys, line, said):
    import main
    preset = tmp_path / "exits.py"
    preset.write_text("img_size = 64\n" + line)
    assert main.main([str(preset), f"--results_dir={str(tmp_path / 'r')!r}"]) == 1
    err = capsys.readouterr().err
    last = len(preset.read_text().splitlines())
    assert f"error: preset '{preset}', line {last}: {said}; a preset holds settings" in err
    assert "interrupted" not in err and not (tmp_path / "r").exists()
