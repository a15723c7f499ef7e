"""The student side of the sandbox: wire.py, worker.py and keeper.py run inside it, standard library only;
the grader imports only wire.py (see ../codec.py). This file is not copied into the sandbox."""
