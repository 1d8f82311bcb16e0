"""Small things every layer uses: the project's exceptions, name checks, text and file helpers.

May import nothing of ``core`` but itself; standard library only (no NumPy, Pillow or TensorFlow).
"""
