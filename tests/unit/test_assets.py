import pytest

from trlx.assets import packaged_file


def test_packaged_file_found_without_import():
    path = packaged_file("json", "decoder.py", "pip install nothing", "the decoder")
    assert path.name == "decoder.py" and path.is_file()


def test_packaged_file_errors_name_the_install_command():
    with pytest.raises(ImportError, match="`no_such_pkg_xyz` package, which is not installed: pip install x"):
        packaged_file("no_such_pkg_xyz", "a.csv", "pip install x", "the data")
    with pytest.raises(FileNotFoundError, match="is installed but .*missing.csv is missing; reinstall it: pip x"):
        packaged_file("json", "missing.csv", "pip x", "the data")
