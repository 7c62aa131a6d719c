//! Rendering one job: on this worker's own renderer, or, when fan-out is
//! on and other workers are idle, spread in chunks of pages over their
//! borrowed renderers too ("lanes").

use std::collections::VecDeque;

use bytes::Bytes;

use super::lending::Lane;
use super::PdfWorker;
use crate::queue::JobContext;
use crate::render::process::{wait_any, RenderError, Rendered, Waited};
use crate::render::protocol::{Event, FailKind, PageInfo, Request, Source};
use crate::storage::{is_storage_full, JobInput};

impl PdfWorker {
    /// Renders `request`, spreading its pages over idle workers' renderers
    /// when fan-out is on and some are idle; else on this worker's own.
    pub(super) fn render(
        &mut self,
        request: &Request,
        payload: &[u8],
        ctx: &JobContext,
        on_page: &mut dyn FnMut(&PageInfo),
    ) -> Result<Rendered, RenderError> {
        if !self.settings.fan_out || !self.can_borrow() {
            return self.render_alone(request, payload, ctx, on_page, true);
        }
        // Learn which pages the job has (and check every limit) first.
        let probe = Request {
            dry_run: true,
            ..request.clone()
        };
        let opened = self.renderer()?.render(
            &probe,
            payload,
            ctx.cancelled(),
            ctx.deadline,
            |_| {},
            |_| {},
        )?;
        let pages = crate::render::pages::resolve(request.pages.as_deref(), opened.page_count)
            .map_err(|message| RenderError::Job {
                kind: FailKind::Limit,
                message,
            })?;
        ctx.set_total(pages.len() as u64);
        let mut lanes = self.borrow(pages.len().saturating_sub(1));
        if lanes.is_empty() {
            return self.render_alone(request, payload, ctx, on_page, false);
        }
        // Renderers read an upload held in memory from a file so it
        // crosses a pipe once (a spooled one already is a file).
        let spooled = match &request.source {
            Source::Payload => {
                let bytes = JobInput::Inline(Bytes::copy_from_slice(payload));
                match self.settings.pages.local_input(ctx.job_id, &bytes) {
                    Ok(local) => Some(local),
                    Err(e) => {
                        self.give_back_all(lanes);
                        let message = format!("cannot spool the upload: {e}");
                        // No renderer failed: out of space, the job fails
                        // as the renderer's own write would (507).
                        return Err(if is_storage_full(&e) {
                            RenderError::Job {
                                kind: FailKind::Storage,
                                message,
                            }
                        } else {
                            RenderError::Io(message)
                        });
                    }
                }
            }
            Source::File(_) => None,
        };
        let source = spooled
            .as_ref()
            .map_or_else(|| request.source.clone(), |s| Source::File(s.path().into()));
        let own = self
            .renderer
            .take()
            .ok_or_else(|| RenderError::Io("renderer missing".into()))?;
        lanes.insert(
            0,
            Lane {
                renderer: own,
                lender: None,
                busy: false,
            },
        );
        // Small chunks balance the lanes and let a lender reclaim its
        // renderer soon; a chunk re-opens the document (about 1 ms).
        let chunk = pages.len().div_ceil(lanes.len() * 4).clamp(1, 8);
        let chunks: VecDeque<Vec<u32>> = pages.chunks(chunk).map(<[u32]>::to_vec).collect();
        tracing::debug!(
            lanes = lanes.len(),
            pages = pages.len(),
            chunk,
            "fanning out"
        );
        self.engine
            .fanned_out_jobs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.run_lanes(&mut lanes, request, source, chunks, ctx, on_page);
        for lane in lanes {
            match lane.lender {
                None => self.renderer = Some(lane.renderer),
                Some(lender) => self.give_back(lender, Some(lane.renderer)),
            }
        }
        result.map(|mut pages_done| {
            pages_done.sort_by_key(|p| p.page);
            Rendered {
                page_count: opened.page_count,
                pages: pages_done,
            }
        })
    }

    /// The whole job on this worker's own renderer.
    fn render_alone(
        &mut self,
        request: &Request,
        payload: &[u8],
        ctx: &JobContext,
        on_page: &mut dyn FnMut(&PageInfo),
        report_total: bool,
    ) -> Result<Rendered, RenderError> {
        self.renderer()?.render(
            request,
            payload,
            ctx.cancelled(),
            ctx.deadline,
            |total| {
                if report_total {
                    ctx.set_total(u64::from(total));
                }
            },
            |page| on_page(page),
        )
    }

    fn give_back_all(&self, lanes: Vec<Lane>) {
        for lane in lanes {
            if let Some(lender) = lane.lender {
                self.give_back(lender, Some(lane.renderer));
            }
        }
    }

    /// Feeds chunks of pages to the lanes until all are rendered. Lanes
    /// still held when it returns are alive; dead ones were removed (and
    /// borrowed ones reported dead to their owners).
    fn run_lanes(
        &mut self,
        lanes: &mut Vec<Lane>,
        request: &Request,
        source: Source,
        mut chunks: VecDeque<Vec<u32>>,
        ctx: &JobContext,
        on_page: &mut dyn FnMut(&PageInfo),
    ) -> Result<Vec<PageInfo>, RenderError> {
        let chunk_request = |pages: &[u32]| Request {
            source: source.clone(),
            pages: Some(pages.iter().map(|&p| (p, Some(p))).collect()),
            dry_run: false,
            ..request.clone()
        };
        let mut done = Vec::new();
        let mut failure = None;
        // Start every lane.
        for lane in lanes.iter_mut() {
            if let Some(pages) = chunks.pop_front() {
                if let Err(e) = lane.renderer.send(&chunk_request(&pages), &[]) {
                    failure = Some(e);
                    break;
                }
                lane.busy = true;
            }
        }
        while failure.is_none() && lanes.iter().any(|l| l.busy) {
            let busy: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i].busy).collect();
            let receivers: Vec<_> = busy.iter().map(|&i| lanes[i].renderer.events()).collect();
            let (i, event) = match wait_any(&receivers, ctx.cancelled(), ctx.deadline) {
                Waited::Event(at, event) => (busy[at], event),
                Waited::Cancelled => {
                    failure = Some(RenderError::Cancelled);
                    break;
                }
            };
            match event {
                Ok(Ok(Event::Page(page))) => {
                    on_page(&page);
                    done.push(page);
                }
                Ok(Ok(Event::Opened { .. })) => {}
                Ok(Ok(Event::Done)) => {
                    lanes[i].busy = false;
                    let reclaimed = lanes[i].lender.is_some_and(|l| self.wanted_back(l));
                    if !reclaimed {
                        if let Some(pages) = chunks.pop_front() {
                            if let Err(e) = lanes[i].renderer.send(&chunk_request(&pages), &[]) {
                                failure = Some(e);
                                break;
                            }
                            lanes[i].busy = true;
                            continue;
                        }
                    }
                    // Give a borrowed renderer back as soon as it is idle.
                    if let Some(lender) = lanes[i].lender {
                        let lane = lanes.remove(i);
                        self.give_back(lender, Some(lane.renderer));
                    }
                }
                Ok(Ok(Event::Failed { kind, message })) => {
                    lanes[i].busy = false;
                    failure = Some(RenderError::Job { kind, message });
                }
                Ok(Ok(Event::Ready { .. })) | Ok(Err(_)) | Err(_) => {
                    let exit = lanes[i].renderer.kill();
                    failure = Some(RenderError::Crashed { exit, detail: None });
                }
            }
            if chunks.is_empty() && lanes.iter().all(|l| !l.busy) {
                break;
            }
            // A lender that wants its renderer back and whose lane is idle
            // was handled above; busy lanes finish their chunk first.
        }
        let Some(failure) = failure else {
            return Ok(done);
        };
        self.stop_lanes(lanes, &failure);
        Err(failure)
    }

    /// Stops every lane still working on a failed job: their output is
    /// discarded with the job's pages. Killed or dead renderers leave the
    /// lanes; the own one is replaced by `after_job`, a borrowed one by
    /// `replace_lost`.
    fn stop_lanes(&mut self, lanes: &mut Vec<Lane>, failure: &RenderError) {
        let all_dead = matches!(
            failure,
            RenderError::Crashed { .. } | RenderError::Cancelled
        );
        let mut i = 0;
        while i < lanes.len() {
            if lanes[i].busy || all_dead {
                let mut lane = lanes.remove(i);
                lane.renderer.kill();
                self.engine.track(lane.renderer.pid, false);
                if let Some(lender) = lane.lender {
                    self.engine
                        .renderer_kills
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.lost.push(lender);
                }
            } else {
                i += 1;
            }
        }
    }
}
