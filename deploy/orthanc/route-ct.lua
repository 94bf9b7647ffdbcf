-- Forward every CT series to ctnode once Orthanc considers it complete ("stable": no new
-- instance for StableAge seconds). The node's own results (Manufacturer "ctnode") are not
-- sent back to it, and the node decides itself which series to score ([[routes]]).
-- "ctnode" is the DicomModalities entry of orthanc.json.

function OnStableSeries(seriesId, tags, metadata)
   local series = ParseJson(RestApiGet('/series/' .. seriesId))
   local main = series['MainDicomTags']
   if main['Modality'] ~= 'CT' or main['Manufacturer'] == 'ctnode' then
      return
   end
   print('forwarding CT series ' .. seriesId .. ' to ctnode')
   -- Asynchronous: a job of Orthanc's, retried from its Jobs page if the node is down.
   RestApiPost('/modalities/ctnode/store',
               DumpJson({ Resources = { seriesId }, Asynchronous = true }, true))
end
