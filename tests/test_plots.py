"""The PNGs drawn from metrics.jsonl: nothing before there is something to draw, a PNG (written
whole) once there is; non-finite values are left out."""

from bertlab.train.metric_writer import METRICS_FILE, MetricWriter
from bertlab.train.plots import plot_loss_curve
from bertlab.train.plots_finetune import _by_epoch, plot_epoch_curves, plot_seed_curves

PNG = b"\x89PNG\r\n\x1a\n"


def write(workdir, records):
    writer = MetricWriter(str(workdir), total_steps=10, progress=False)
    for step, split, scalars in records:
        writer.write(step, split, scalars)
    writer.close()
    return str(workdir / METRICS_FILE)


def test_loss_curve_waits_for_data_then_writes_a_png(tmp_path):
    assert plot_loss_curve(str(tmp_path / "none.jsonl"), str(tmp_path / "loss.png")) is None
    path = write(tmp_path, [(1, "train", {"loss": 5.0}), (2, "train", {"loss": float("nan")}),
                            (2, "eval", {"mlm_loss": 4.0})])
    out = plot_loss_curve(path, str(tmp_path / "loss.png"))
    assert out == str(tmp_path / "loss.png") and open(out, "rb").read(8) == PNG
    assert not (tmp_path / "loss.png.tmp.png").exists()


def test_epoch_curves_take_the_last_value_per_epoch_and_skip_non_finite_ones():
    records = {10: {"epoch": 1, "loss": 0.7}, 20: {"epoch": 2, "loss": float("nan")},
               30: {"epoch": 2, "loss": 0.5}, 40: {"loss": 0.1}}  # no epoch: a "train" line
    assert _by_epoch(records, "loss") == ([1, 2], [0.7, 0.5])


def test_seed_curves_overlay_seeds_and_wait_for_the_first_epoch(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    early = write(tmp_path / "a", [(8, "train", {"loss": 0.9})])  # no epoch finished yet
    assert plot_epoch_curves(early, str(tmp_path / "a.png"), metric="accuracy") is None
    done = write(tmp_path / "b", [(8, "train_epoch", {"epoch": 1, "loss": 0.6, "accuracy": 0.7}),
                                  (8, "eval", {"epoch": 1, "loss": 0.5, "accuracy": 0.8})])
    out = plot_seed_curves([early, done], str(tmp_path / "curves.png"), metric="accuracy")
    assert open(out, "rb").read(8) == PNG


def test_the_eval_curve_is_labelled_by_its_split(tmp_path, monkeypatch):
    """IMDB scores its test split every epoch: the legend says "test", not "validation"."""
    from matplotlib.figure import Figure

    labels = []
    real_savefig = Figure.savefig

    def savefig(figure, *args, **kwargs):
        labels.append([[text.get_text() for text in axes.get_legend().get_texts()]
                       for axes in figure.axes])
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    path = write(tmp_path, [(8, "train_epoch", {"epoch": 1, "loss": 0.6, "accuracy": 0.7}),
                            (8, "eval", {"epoch": 1, "loss": 0.5, "accuracy": 0.8})])
    plot_epoch_curves(path, str(tmp_path / "curves.png"), metric="accuracy", eval_name="test")
    plot_seed_curves([path], str(tmp_path / "all.png"), metric="accuracy")
    assert labels == [[["train", "test"], ["train", "test"]],
                      [["train", "validation"], ["train", "validation"]]]


def test_curves_plot_and_title_the_selection_metric(tmp_path, monkeypatch):
    """The right panel is the run's train.select_metric (F1 for MRPC, not the registry's
    accuracy/F1 mean), titled as the selector; with select_metric=loss, one panel."""
    from matplotlib.figure import Figure

    panels = []
    real_savefig = Figure.savefig

    def savefig(figure, *args, **kwargs):
        panels.append([(axes.get_ylabel(), axes.get_title(),
                        [list(line.get_ydata()) for line in axes.get_lines()])
                       for axes in figure.axes])
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    path = write(tmp_path, [
        (4, "train_epoch", {"epoch": 1, "loss": 0.6, "accuracy": 0.7, "f1": 0.75,
                            "accuracy_and_f1": 0.725}),
        (4, "eval", {"epoch": 1, "loss": 0.5, "accuracy": 0.8, "f1": 0.6, "accuracy_and_f1": 0.7}),
        (8, "train_epoch", {"epoch": 2, "loss": 0.4, "accuracy": 0.9, "f1": 0.85,
                            "accuracy_and_f1": 0.875}),
        (8, "eval", {"epoch": 2, "loss": 0.45, "accuracy": 0.7, "f1": 0.9, "accuracy_and_f1": 0.8})])
    plot_epoch_curves(path, str(tmp_path / "f1.png"), metric="f1")
    plot_seed_curves([path], str(tmp_path / "loss.png"), metric="loss")
    assert panels == [
        [("loss", "", [[0.6, 0.4], [0.5, 0.45]]),
         ("f1", "f1: selects the best epoch", [[0.75, 0.85], [0.6, 0.9]])],
        [("loss", "loss: selects the best epoch", [[0.6, 0.4], [0.5, 0.45]])]]
