"""Tracking quality of `benchmarks.video`: our tracker (`video.face_tracks`) in its variants,
ByteTrack and norfair, on the same answers, against the clips' truth.

A detection matches a visible true face at IoU >= MATCH_IOU (a Hungarian assignment per
frame). `tracking_quality` gives IDF1, ID switches per 100 true face-frames and MOTA
(motmetrics); `idf1_losses` says where IDF1 is lost; `labelled_tracks` gives each track its
person, for the age figures of `benchmarks.video`.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

from video import face_tracks, tracking
from video import annotate as annotate_lib

MATCH_IOU = 0.5

# -- trackers on the same answers ----------------------------------------------------------

def run_ours(answers, fps, params, appearance=True, live_ids=False, detect_every=1,
             **options):
    """[(track id or None, face, fused Answer or None)] per frame. A face's id is its
    track's id once confirmed (as `video.annotate` writes and draws it: the first frame of
    a track is known to be one a frame later); `live_ids`: the id at that frame (as a live
    page shows it: None on a track's first frame). `detect_every=K`: only frames 0, K, 2K,
    .. are given their answers (as `video.annotate --detect_every` asks the model), the rest
    are `FaceTracks.skip`ped. `options` go to
    `video.face_tracks.FaceTracks` (fill_gaps, coast, tracker options); interpolated
    boxes join their frames (their face a `FilledFace`)."""
    if not appearance:
        options["appearance_weight"] = 0
    people = face_tracks.FaceTracks(params, **options)
    out = []
    for i, faces in enumerate(answers):
        out.append(people.update(i, i / fps, faces) if annotate_lib.is_answered(i, detect_every)
                   else people.skip(i, i / fps))
        for frame_index, _, item in people.pop_filled():
            out[frame_index].append(item)
    people.finish()
    return [[(t.track_id if live_ids or t.track is None else t.track.id, t.face, t.answer)
             for t in tracked] for tracked in out]


# What the tracking comparison runs of ours, side by side on the same answers: name ->
# run_ours options.
OUR_VARIANTS = {
    "ours": {"fill_gaps": annotate_lib.FILL_GAPS},  # as video.annotate runs it
    "ours_no_fill": {},
    "ours_no_appearance": {"fill_gaps": annotate_lib.FILL_GAPS, "appearance": False},
    "ours_fill_5": {"fill_gaps": 5},
    "ours_fill_25": {"fill_gaps": 25},
    "ours_fill_no_hidden_check": {"fill_gaps": annotate_lib.FILL_GAPS, "hidden_fraction": 0},
    # Every 2nd / 3rd frame answered, the frames between interpolated (--detect_every).
    "ours_detect_every_2": {"fill_gaps": annotate_lib.FILL_GAPS, "detect_every": 2},
    "ours_detect_every_3": {"fill_gaps": annotate_lib.FILL_GAPS, "detect_every": 3},
    "ours_live": {"live_ids": True},  # as a live page shows it (video.session)
    "ours_live_coast_1": {"live_ids": True, "coast": 1},
    "ours_live_coast_2": {"live_ids": True, "coast": 2},
    "ours_before_2026_12_06": {"max_missed_seconds": 1.0, "distance_growth": 1.5,
                               "max_scale": float("inf"), "live_ids": True},
}


def run_bytetrack(answers, fps):
    import supervision as sv

    tracker = sv.ByteTrack(frame_rate=int(round(fps)))
    out = []
    for faces in answers:
        if not faces:
            tracker.update_with_detections(sv.Detections.empty())
            out.append([])
            continue
        detections = sv.Detections(
            xyxy=np.array([f.box for f in faces], np.float32),
            confidence=np.array([f.score or 1.0 for f in faces], np.float32),
            data={"index": np.arange(len(faces))})
        result = tracker.update_with_detections(detections)
        ids = ({} if not len(result) else
               dict(zip(result.data["index"].tolist(), result.tracker_id.tolist())))
        out.append([(ids.get(j), f, None) for j, f in enumerate(faces)])
    return out


def run_norfair(answers, fps):
    from norfair import Detection, Tracker

    tracker = Tracker(distance_function="iou", distance_threshold=0.8,
                      hit_counter_max=int(fps), initialization_delay=1)
    out = []
    for faces in answers:
        detections = [Detection(np.array([[f.box[0], f.box[1]], [f.box[2], f.box[3]]]),
                                data=j) for j, f in enumerate(faces)]
        objects = tracker.update(detections)
        this_frame = {id(d): j for j, d in enumerate(detections)}
        ids = {this_frame[id(o.last_detection)]: o.id for o in objects
               if id(o.last_detection) in this_frame}
        out.append([(ids.get(j), f, None) for j, f in enumerate(faces)])
    return out


# -- matching to the truth -----------------------------------------------------------------

def match_truth(frame_truth, faces):
    """{face index: person} for detections at IoU >= MATCH_IOU with a visible true face."""
    if not frame_truth or not faces:
        return {}
    truth_boxes = np.array([box for _, box in frame_truth])
    iou = tracking.iou_matrix(truth_boxes, np.array([f.box for f in faces]))
    rows, cols = linear_sum_assignment(-iou)
    return {int(c): frame_truth[r][0] for r, c in zip(rows, cols) if iou[r, c] >= MATCH_IOU}


def tracking_quality(clips, tracked_clips):
    """IDF1, ID switches per 100 true face-frames and MOTA (motmetrics) over all clips;
    IDF1 counting only the true faces the detector found (`idf1_detected_faces`), and
    counting only the people it found in at least one frame of their clip
    (`idf1_found_people`: a UTKFace crop that shows no face is in the truth, as any
    person, but no detector finds it), with those people's face-frames
    (`never_found_face_frames`)."""
    import motmetrics as mm

    accumulators, detected_only, found_people = [], [], []
    truth_frames = found = never_found = 0
    for clip, tracked in zip(clips, tracked_clips):
        acc = mm.MOTAccumulator(auto_id=True)
        acc_detected = mm.MOTAccumulator(auto_id=True)
        acc_people = mm.MOTAccumulator(auto_id=True)
        ever = set()
        for frame_truth, items in zip(clip.truth, tracked):
            ever.update(match_truth(frame_truth, [face for _, face, _ in items if not
                                                  isinstance(face, face_tracks.FilledFace)]
                                    ).values())
        for frame_truth, items in zip(clip.truth, tracked):
            matched = match_truth(frame_truth, [face for _, face, _ in items
                                                if not isinstance(face, face_tracks.FilledFace)])
            found += len(matched)  # the detector's boxes only (not interpolated ones)
            # The same frame with only the true faces the detector found: the tracker's
            # own share of the errors.
            seen = set(matched.values())
            truth_seen = [(k, box) for k, box in frame_truth if k in seen]
            items = [(tid, face) for tid, face, _ in items if tid is not None]
            iou = tracking.iou_matrix([box for _, box in truth_seen],
                                      [face.box for _, face in items])
            acc_detected.update([k for k, _ in truth_seen], [tid for tid, _ in items],
                                np.where(iou >= MATCH_IOU, 1 - iou, np.nan))
            # motmetrics' own iou_matrix uses np.asfarray (gone in NumPy 2): the same
            # distances (1 - IoU, NaN below the match threshold) from video.tracking.
            iou = tracking.iou_matrix([box for _, box in frame_truth],
                                      [face.box for _, face in items])
            distances = np.where(iou >= MATCH_IOU, 1 - iou, np.nan)
            acc.update([k for k, _ in frame_truth], [tid for tid, _ in items], distances)
            truth_frames += len(frame_truth)
            keep = [r for r, (k, _) in enumerate(frame_truth) if k in ever]
            never_found += len(frame_truth) - len(keep)
            acc_people.update([frame_truth[r][0] for r in keep], [tid for tid, _ in items],
                              distances[keep] if len(keep) else np.zeros((0, len(items))))
        accumulators.append(acc)
        detected_only.append(acc_detected)
        found_people.append(acc_people)
    metrics = mm.metrics.create()
    names = ["idf1", "num_switches", "mota"]
    summary = metrics.compute_many(accumulators, metrics=names,
                                   generate_overall=True).loc["OVERALL"]
    detected = metrics.compute_many(detected_only, metrics=names,
                                    generate_overall=True).loc["OVERALL"]
    people = metrics.compute_many(found_people, metrics=names,
                                  generate_overall=True).loc["OVERALL"]
    return {"idf1": float(summary["idf1"]), "id_switches": int(summary["num_switches"]),
            "id_switches_per_100": 100 * float(summary["num_switches"]) / max(truth_frames, 1),
            "mota": float(summary["mota"]), "truth_face_frames": truth_frames,
            "detection_recall": found / max(truth_frames, 1),
            "idf1_detected_faces": float(detected["idf1"]),
            "idf1_found_people": float(people["idf1"]), "never_found_face_frames": never_found}


LOSSES = ("missed_inside_track", "missed_outside_track", "missed_no_track",
          "found_untracked", "found_other_id", "false_on_face_other_id", "false_no_face")


def idf1_losses(clips, tracked_clips):
    """Where IDF1 is lost: IDF1 = 2 IDTP / (2 IDTP + IDFN + IDFP), with each true face
    given one track id per clip (the matching of people to ids that maximises the frames
    they share at IoU >= MATCH_IOU, as motmetrics' IDF1 does). Each true face-frame not
    credited (IDFN) is one of: missed by the detector (no tracked or untracked box at IoU
    >= MATCH_IOU) between its id's first and last frame (`missed_inside_track`: what gap
    filling can recover), outside them (`missed_outside_track`), or for a person given no
    id at all (`missed_no_track`); found but with no id (`found_untracked`: a tentative
    track); found under another id (`found_other_id`: a switch or a new id after a loss).
    Each tracked box not credited (IDFP) lies on a true face under another id
    (`false_on_face_other_id`) or on none (`false_no_face`: a false detection, a face past
    the edge or behind another, or an interpolated box where the face was not visible).
    Returns the counts, "idtp" and "idf1" (equal to motmetrics')."""
    counts = dict.fromkeys(LOSSES + ("idtp",), 0)
    for clip, tracked in zip(clips, tracked_clips):
        shared = {}  # (person, id) -> frames matched
        spans = {}   # id -> (first, last) frame
        for i, (frame_truth, items) in enumerate(zip(clip.truth, tracked)):
            ids = [(tid, face) for tid, face, _ in items if tid is not None]
            for tid, _ in ids:
                first, last = spans.get(tid, (i, i))
                spans[tid] = (min(first, i), max(last, i))
            if frame_truth and ids:
                iou = tracking.iou_matrix([b for _, b in frame_truth], [f.box for _, f in ids])
                for r, q in zip(*np.nonzero(iou >= MATCH_IOU)):
                    key = (frame_truth[r][0], ids[q][0])
                    shared[key] = shared.get(key, 0) + 1
        persons = sorted({k for k, _ in shared})
        hyps = sorted({h for _, h in shared})
        assigned = {}
        if shared:
            m = np.zeros((len(persons), len(hyps)))
            for (k, h), n in shared.items():
                m[persons.index(k), hyps.index(h)] = n
            for r, q in zip(*linear_sum_assignment(-m)):
                if m[r, q] > 0:
                    assigned[persons[r]] = hyps[q]
        for i, (frame_truth, items) in enumerate(zip(clip.truth, tracked)):
            boxes = [face.box for _, face, _ in items]
            ids = [tid for tid, _, _ in items]
            iou = (tracking.iou_matrix([b for _, b in frame_truth], boxes)
                   if frame_truth and boxes else np.zeros((len(frame_truth), len(boxes))))
            credited = set()
            for r, (k, _) in enumerate(frame_truth):
                h = assigned.get(k)
                near = [q for q in range(len(boxes)) if iou[r, q] >= MATCH_IOU]
                mine = [q for q in near if ids[q] == h and q not in credited]
                if h is not None and mine:
                    counts["idtp"] += 1
                    credited.add(mine[0])
                elif not near:
                    if h is None:
                        counts["missed_no_track"] += 1
                    elif spans[h][0] < i < spans[h][1]:
                        counts["missed_inside_track"] += 1
                    else:
                        counts["missed_outside_track"] += 1
                elif all(ids[q] is None for q in near):
                    counts["found_untracked"] += 1
                else:
                    counts["found_other_id"] += 1
            for q, tid in enumerate(ids):
                if tid is None or q in credited:
                    continue
                on_face = len(frame_truth) and iou[:, q].max() >= MATCH_IOU
                counts["false_on_face_other_id" if on_face else "false_no_face"] += 1
    lost = sum(counts[k] for k in LOSSES)
    counts["idf1"] = 2 * counts["idtp"] / max(2 * counts["idtp"] + lost, 1)
    return counts


def labelled_tracks(clips, tracked_clips):
    """Per track (clip, id): its person (most matched frames) and its frames in order as
    (frame, face, fused answer, person matched at that frame or None)."""
    tracks = {}
    for c, (clip, tracked) in enumerate(zip(clips, tracked_clips)):
        for i, (frame_truth, items) in enumerate(zip(clip.truth, tracked)):
            matched = match_truth(frame_truth, [face for _, face, _ in items])
            for j, (tid, face, answer) in enumerate(items):
                if tid is not None and not isinstance(face, face_tracks.FilledFace):
                    tracks.setdefault((c, tid), []).append((i, face, answer, matched.get(j)))
    out = []
    for (c, tid), frames in tracks.items():
        persons = [p for *_, p in frames if p is not None]
        if persons:
            person = max(set(persons), key=persons.count)
            out.append((clips[c].people[person], frames))
    return out
