"""Int8, made once: calibration images, ONNX Runtime's static QDQ recipe, NNCF's post-training quantization and
accuracy control, and the loop that puts layers back to fp32 within an accuracy budget.

The quantization compressor, the int8 sensitivity scan, `search`'s int8 steps, the export and scripts/ all call
this package; the runtimes in measuring/runtimes only run the files it writes.
"""
