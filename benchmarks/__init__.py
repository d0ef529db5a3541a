"""Speed measurements of grainsweep, side by side with the obvious alternatives.

One module per benchmark (loader, torchvision_loader, decode_limit, train_step, conversion, sweep_rerun,
distributed, fused, fused_vmap), the shared timing/statistics/environment helpers in `measure`, the suite's data in
`suite_data`, and the driver in `run` (`python -m benchmarks.run` = `make bench`), its settings in `profiles` and
the writer of benchmarks/RESULTS.md in `report` (one table a benchmark in `report_tables`). `gpu_all` runs every
GPU row on one H100/H200 under the device tool's 10 minutes and writes them into RESULTS.md's GPU section.

Benchmarks are not tests: nothing here asserts a speed. tests/test_benchmarks.py only checks that the code runs
on tiny inputs and that its outputs have the promised shape.
"""
