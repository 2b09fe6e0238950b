"""Released weights in other formats, to and from a MODEL_DIR.

* ``t5x_checkpoint.py``: reads the parameters of a t5x checkpoint (msgpack + tensorstore);
* ``diffusers_folder.py``: reads and writes the PyTorch port's folder layout (diffusers);
* ``transfer.py``: ``import_weights`` / ``export_weights``, what msd-import-weights and
  msd-export-weights call;
* ``param_tree.py``: flat parameter names and the one check of a set of tensors.
"""
