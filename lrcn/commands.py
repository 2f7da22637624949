"""The console scripts (setup.cfg's entry points point here): each imports its tool's module
only when run, inside runtime.interrupts.run_command, so that a Ctrl-C while torch and the
other heavy modules import, or anywhere in the tool, ends in exit status 130 and the word
"interrupted", never a traceback. `python -m lrcn` lists them.
"""

from runtime.interrupts import run_command


def _command(target):
    def command(argv=None):
        run_command(target, argv)
    command.__doc__ = f"Run {target} as a console script (argv: instead of sys.argv[1:])."
    command.target = target
    return command


lrcn_check = _command("compiler.cli:check_main")
lrcn_fmt = _command("compiler.cli:fmt_main")
lrcn_show = _command("compiler.review_cli:show_main")
lrcn_diff = _command("compiler.review_cli:diff_main")
lrcn_draw = _command("compiler.review_cli:draw_main")
lrcn_train = _command("runtime.cli:train_main")
lrcn_test = _command("runtime.cli:test_main")
lrcn_time = _command("runtime.cli:time_main")
lrcn_export = _command("runtime.export_cli:export_main")
lrcn_convert_imageset = _command("runtime.data_tools:convert_imageset_main")
lrcn_compute_mean = _command("runtime.data_tools:compute_mean_main")
lrcn_caption_data = _command("lrcn_apps.caption.prepare:main")
lrcn_caption = _command("lrcn_apps.caption.generate:main")
lrcn_caption_bundle = _command("lrcn_apps.caption.bundle:export_main")
lrcn_caption_onnx = _command("lrcn_apps.caption.bundle:run_main")
lrcn_caption_retrieval = _command("lrcn_apps.caption.retrieval:main")
lrcn_caption_eval = _command("lrcn_apps.caption.metrics:main")
lrcn_activity_data = _command("lrcn_apps.activity.prepare:main")
lrcn_activity_eval = _command("lrcn_apps.activity.evaluate:main")
lrcn_activity_score = _command("lrcn_apps.activity.run_eval:main")
lrcn_video_data = _command("lrcn_apps.video.prepare:main")
lrcn_describe = _command("lrcn_apps.video.describe:main")
lrcn_video_recognise = _command("lrcn_apps.video.recogniser:main")
